//! Twilio Programmable Messaging, for SMS and WhatsApp:
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded (`To`, `From` or
//! `MessagingServiceSid`, `Body`, `StatusCallback`), HTTP Basic with the account SID (or an
//! API key SID) and its secret. WhatsApp addresses carry the `whatsapp:` prefix.
//!
//! Answers: 201 with the message `sid`; errors as `{"code", "message", "status"}`. Codes that
//! mean the number can never receive (21211 invalid `To`, 21610 the recipient replied STOP,
//! 21612 cannot route, 21614 not a mobile number, 63024 not a WhatsApp user) make the address
//! undeliverable; 429 (20429) slows down; 5xx and network errors are transient; other 4xx
//! refuse this message. The status callback URL carries the delivery key, so the signed
//! webhook names the delivery it is about.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{api_client, parse_retry_after, unanswered};
use super::setup::{env, AdapterSettings, ProvidersError, Setup};
use super::{error_reason, AttemptError, AttemptFuture, Outgoing, Transport};
use crate::model::Channel;
use crate::secret::Secret;

/// Twilio error codes after which a number is not worth trying again.
const UNDELIVERABLE: [u64; 5] = [21211, 21610, 21612, 21614, 63024];

/// The `twilio` adapter's settings in the providers file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// Twilio's API (`https://api.twilio.com` when absent), or a test server.
    pub url: Option<String>,
    /// The account SID (`AC...`).
    pub account_sid: String,
    /// The user of HTTP Basic when it is an API key (`SK...`); the account SID otherwise.
    pub api_key_sid: Option<String>,
    /// The variable holding the auth token (or the API key's secret).
    pub auth_token_env: String,
    /// A sender number (`+1...`) or a Messaging Service SID (`MG...`).
    pub from: String,
}

impl AdapterSettings for TwilioConfig {
    const KIND: &'static str = "twilio";

    fn sends(channel: Channel) -> bool {
        matches!(channel, Channel::Sms | Channel::Whatsapp)
    }

    fn build(&self, setup: &Setup) -> Result<Box<dyn Transport>, ProvidersError> {
        Ok(Box::new(TwilioTransport::new(TwilioSettings {
            base_url: setup.api_url(&self.url, "https://api.twilio.com")?,
            username: self.api_key_sid.clone().unwrap_or(self.account_sid.clone()),
            account_sid: self.account_sid.clone(),
            secret: env(&self.auth_token_env)?,
            from: self.from.clone(),
            channel: setup.channel,
            // Without status callbacks every message would wait out its time-out and fall
            // back to another channel: a second message to the customer.
            public_url: setup
                .flags
                .public_url
                .clone()
                .ok_or(ProvidersError::Missing(
                    "HERALD_PUBLIC_URL, where Twilio posts delivery statuses",
                ))?,
            timeout: setup.timeout(),
            concurrency: setup.concurrency(),
        })?))
    }
}

/// Where and as whom Twilio is called.
pub struct TwilioSettings {
    /// `https://api.twilio.com`, or a sandbox / test server.
    pub base_url: String,
    pub account_sid: String,
    /// The user of HTTP Basic: the account SID, or an API key SID (`SK...`).
    pub username: String,
    pub secret: Secret,
    /// A sender number (`+1...`) or a Messaging Service SID (`MG...`).
    pub from: String,
    pub channel: Channel,
    /// Herald's public base URL: status callbacks go to `{url}/v1/webhooks/twilio`.
    pub public_url: String,
    pub timeout: Duration,
    pub concurrency: usize,
}

pub struct TwilioTransport {
    http: reqwest::Client,
    messages_url: String,
    username: String,
    secret: Secret,
    from: String,
    whatsapp: bool,
    callback: String,
}

#[derive(Deserialize)]
struct Created {
    sid: String,
}

#[derive(Deserialize, Default)]
struct TwilioError {
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

impl TwilioTransport {
    pub fn new(s: TwilioSettings) -> Result<Self, reqwest::Error> {
        let http = api_client(s.timeout, s.concurrency)?;
        Ok(TwilioTransport {
            http,
            messages_url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                s.base_url.trim_end_matches('/'),
                s.account_sid
            ),
            username: s.username,
            secret: s.secret,
            from: s.from,
            whatsapp: s.channel == Channel::Whatsapp,
            callback: format!("{}/v1/webhooks/twilio", s.public_url.trim_end_matches('/')),
        })
    }

    /// `whatsapp:+34...` on the WhatsApp channel, the number as it is on SMS.
    fn address(&self, number: &str) -> String {
        if self.whatsapp && !number.starts_with("whatsapp:") {
            format!("whatsapp:{number}")
        } else {
            number.to_string()
        }
    }

    fn form(&self, out: &Outgoing<'_>) -> Vec<(&'static str, String)> {
        let sender = if self.from.starts_with("MG") {
            ("MessagingServiceSid", self.from.clone())
        } else {
            ("From", self.address(&self.from))
        };
        let key: String = form_urlencoded::byte_serialize(out.key.as_bytes()).collect();
        vec![
            ("To", self.address(out.message.to.trim())),
            sender,
            ("Body", out.message.message.clone()),
            ("StatusCallback", format!("{}?key={key}", self.callback)),
        ]
    }

    async fn call(&self, out: &Outgoing<'_>) -> Result<String, AttemptError> {
        let response = self
            .http
            .post(&self.messages_url)
            .basic_auth(&self.username, Some(self.secret.expose()))
            .form(&self.form(out))
            .send()
            .await
            .map_err(|e| unanswered("Twilio", &e))?;
        let status = response.status();
        if status.is_success() {
            return match super::bounded_json::<Created>(response).await {
                Some(created) => Ok(created.sid),
                None => Err(AttemptError::unreadable_acceptance(
                    "Twilio answered without a message sid",
                )),
            };
        }
        let retry_after = parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
        let error: TwilioError = super::bounded_json(response).await.unwrap_or_default();
        Err(classify(status, &error, retry_after))
    }
}

fn classify(status: StatusCode, e: &TwilioError, retry_after: Duration) -> AttemptError {
    let code = e.code.map(|c| c.to_string()).unwrap_or_default();
    let reason = error_reason("Twilio", status, code, e.message.as_deref().unwrap_or(""));
    if status == StatusCode::TOO_MANY_REQUESTS || e.code == Some(20429) {
        return AttemptError::RateLimited { retry_after };
    }
    // Wrong credentials (401/403) fail every message alike: let the breaker see them, so
    // another provider takes over.
    if status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
    {
        return AttemptError::answered(reason);
    }
    match e.code {
        Some(code) if UNDELIVERABLE.contains(&code) => AttemptError::Undeliverable { reason },
        _ => AttemptError::Rejected { reason },
    }
}

impl Transport for TwilioTransport {
    fn attempt<'a>(&'a self, out: &'a Outgoing<'a>) -> AttemptFuture<'a> {
        Box::pin(self.call(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: u64) -> TwilioError {
        TwilioError {
            code: Some(code),
            message: Some("m".into()),
        }
    }

    #[test]
    fn documented_error_classes_map_to_outcomes() {
        let wait = Duration::from_secs(1);
        for code in UNDELIVERABLE {
            assert!(matches!(
                classify(StatusCode::BAD_REQUEST, &error(code), wait),
                AttemptError::Undeliverable { .. }
            ));
        }
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &error(21602), wait),
            AttemptError::Rejected { .. }
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, &error(20429), wait),
            AttemptError::RateLimited { .. }
        ));
        assert!(matches!(
            classify(
                StatusCode::SERVICE_UNAVAILABLE,
                &TwilioError::default(),
                wait
            ),
            AttemptError::Transient {
                maybe_sent: false,
                ..
            }
        ));
    }
}
