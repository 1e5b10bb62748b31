//! Meta's WhatsApp Business Cloud API: `POST {base}/{version}/{phone-number-id}/messages`,
//! bearer token, JSON. Marketing outside the 24-hour customer-service window must be an
//! approved *template* message: its name, language and body parameters come from the
//! campaign (rendered per customer); without one the message goes as text, which Meta
//! accepts only inside the window (131047 otherwise). `biz_opaque_callback_data` carries the
//! delivery key, and Meta echoes it in the status webhook.
//!
//! Answers: 200 with `messages[0].id` (a `wamid`); errors as `{"error": {"code", "message"}}`.
//! 131026 (the number cannot receive: not on WhatsApp, old app) makes the address
//! undeliverable; 130429, 131048, 131056 and 80007 (throughput, spam and pair rate limits)
//! slow down; 131000, 131016, 2 and 5xx are transient; 190 (token expired) and 401 are
//! transient so the breaker can hand over to another provider; others refuse the message.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{api_client, parse_retry_after, unanswered};
use super::setup::{env, AdapterSettings, ProvidersError, Setup};
use super::{error_reason, AttemptError, AttemptFuture, Outgoing, Transport};
use crate::model::Channel;
use crate::secret::Secret;

const UNDELIVERABLE: [u64; 1] = [131026];
const SLOW_DOWN: [u64; 4] = [130429, 131048, 131056, 80007];
const TRANSIENT: [u64; 4] = [131000, 131016, 2, 190];

/// The `whatsapp` adapter's settings in the providers file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappConfig {
    /// The Graph API (`https://graph.facebook.com` when absent), or a test server.
    pub url: Option<String>,
    /// The Graph API version (`v21.0` when absent).
    pub version: Option<String>,
    /// The sending phone number's id.
    pub phone_number_id: String,
    /// The variable holding the access token.
    pub token_env: String,
}

impl AdapterSettings for WhatsappConfig {
    const KIND: &'static str = "whatsapp";

    fn sends(channel: Channel) -> bool {
        channel == Channel::Whatsapp
    }

    fn build(&self, setup: &Setup) -> Result<Box<dyn Transport>, ProvidersError> {
        Ok(Box::new(WhatsappTransport::new(WhatsappSettings {
            base_url: setup.api_url(&self.url, "https://graph.facebook.com")?,
            version: self.version.clone().unwrap_or("v21.0".into()),
            phone_number_id: self.phone_number_id.clone(),
            token: env(&self.token_env)?,
            timeout: setup.timeout(),
            concurrency: setup.concurrency(),
        })?))
    }
}

pub struct WhatsappSettings {
    /// `https://graph.facebook.com`, or a test server.
    pub base_url: String,
    /// The Graph API version, e.g. `v21.0`.
    pub version: String,
    pub phone_number_id: String,
    pub token: Secret,
    pub timeout: Duration,
    pub concurrency: usize,
}

pub struct WhatsappTransport {
    http: reqwest::Client,
    messages_url: String,
    token: Secret,
}

#[derive(Deserialize)]
struct Sent {
    messages: Vec<SentMessage>,
}

#[derive(Deserialize)]
struct SentMessage {
    id: String,
}

#[derive(Deserialize, Default)]
struct MetaErrorBody {
    #[serde(default)]
    error: MetaError,
}

#[derive(Deserialize, Default)]
struct MetaError {
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

impl WhatsappTransport {
    pub fn new(s: WhatsappSettings) -> Result<Self, reqwest::Error> {
        let http = api_client(s.timeout, s.concurrency)?;
        Ok(WhatsappTransport {
            http,
            messages_url: format!(
                "{}/{}/{}/messages",
                s.base_url.trim_end_matches('/'),
                s.version,
                s.phone_number_id
            ),
            token: s.token,
        })
    }

    /// The request body: a template message when the delivery names one, else text.
    pub fn body(out: &Outgoing<'_>) -> Value {
        // The Cloud API takes the number in international form without the `+`.
        let to = out
            .message
            .to
            .trim()
            .trim_start_matches("whatsapp:")
            .trim_start_matches('+');
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "biz_opaque_callback_data": out.key,
        });
        match out.whatsapp {
            Some(t) => {
                let parameters: Vec<Value> = t
                    .parameters
                    .iter()
                    .map(|p| json!({"type": "text", "text": p}))
                    .collect();
                body["type"] = json!("template");
                body["template"] = json!({
                    "name": t.name,
                    "language": {"code": t.language},
                    "components": [{"type": "body", "parameters": parameters}],
                });
            }
            None => {
                body["type"] = json!("text");
                body["text"] = json!({"preview_url": false, "body": out.message.message});
            }
        }
        body
    }

    async fn call(&self, out: &Outgoing<'_>) -> Result<String, AttemptError> {
        let response = self
            .http
            .post(&self.messages_url)
            .bearer_auth(self.token.expose())
            .json(&Self::body(out))
            .send()
            .await
            .map_err(|e| unanswered("the WhatsApp Cloud API", &e))?;
        let status = response.status();
        if status.is_success() {
            return match super::bounded_json::<Sent>(response)
                .await
                .and_then(|s| s.messages.into_iter().next())
            {
                Some(m) => Ok(m.id),
                None => Err(AttemptError::unreadable_acceptance(
                    "the WhatsApp Cloud API answered without a message id",
                )),
            };
        }
        let retry_after = parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
        let body: MetaErrorBody = super::bounded_json(response).await.unwrap_or_default();
        Err(classify(status, &body.error, retry_after))
    }
}

fn classify(status: StatusCode, e: &MetaError, retry_after: Duration) -> AttemptError {
    let shown = e.code.map(|c| c.to_string()).unwrap_or_default();
    let reason = error_reason(
        "WhatsApp",
        status,
        shown,
        e.message.as_deref().unwrap_or(""),
    );
    let code = e.code.unwrap_or(0);
    if status == StatusCode::TOO_MANY_REQUESTS || SLOW_DOWN.contains(&code) {
        return AttemptError::RateLimited { retry_after };
    }
    if UNDELIVERABLE.contains(&code) {
        return AttemptError::Undeliverable { reason };
    }
    if status.is_server_error() || TRANSIENT.contains(&code) || status == StatusCode::UNAUTHORIZED {
        return AttemptError::answered(reason);
    }
    AttemptError::Rejected { reason }
}

impl Transport for WhatsappTransport {
    fn attempt<'a>(&'a self, out: &'a Outgoing<'a>) -> AttemptFuture<'a> {
        Box::pin(self.call(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Channel, Message, WhatsappTemplate};

    #[test]
    fn a_template_message_carries_name_language_parameters_and_the_key() {
        let message = Message {
            to: "+34600000001".into(),
            message: "Hola Ana".into(),
            channel: Channel::Whatsapp,
        };
        let template = WhatsappTemplate {
            name: "spring_offer".into(),
            language: "es".into(),
            parameters: vec!["Ana".into(), "C1".into()],
        };
        let out = Outgoing {
            key: "c:u:whatsapp",
            message: &message,
            email: None,
            whatsapp: Some(&template),
            promotion: None,
        };
        let body = WhatsappTransport::body(&out);
        assert_eq!(body["to"], "34600000001");
        assert_eq!(body["type"], "template");
        assert_eq!(body["template"]["name"], "spring_offer");
        assert_eq!(body["template"]["language"]["code"], "es");
        assert_eq!(
            body["template"]["components"][0]["parameters"][1]["text"],
            "C1"
        );
        assert_eq!(body["biz_opaque_callback_data"], "c:u:whatsapp");
        let text = WhatsappTransport::body(&Outgoing {
            whatsapp: None,
            ..out
        });
        assert_eq!(
            (text["type"].as_str(), text["text"]["body"].as_str()),
            (Some("text"), Some("Hola Ana"))
        );
    }

    #[test]
    fn documented_error_codes_map_to_outcomes() {
        let e = |code| MetaError {
            code: Some(code),
            message: None,
        };
        let wait = Duration::from_secs(1);
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &e(131026), wait),
            AttemptError::Undeliverable { .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &e(130429), wait),
            AttemptError::RateLimited { .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &e(131047), wait),
            AttemptError::Rejected { .. }
        ));
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, &e(131000), wait),
            AttemptError::Transient { .. }
        ));
    }
}
